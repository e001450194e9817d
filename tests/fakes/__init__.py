"""Local servers that speak providers' real wire formats, for tests and benchmarks."""
