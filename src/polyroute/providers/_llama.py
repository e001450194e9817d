"""One llama-cpp-python context and the token loop that turns a chat into text.

Prompts are rendered with the chat template from the GGUF metadata, through the same Jinja
formatter llama-cpp-python's ``create_chat_completion`` builds for it (and the same "llama-2"
fallback for a file without a template). Tokens then come from ``Llama.generate``. Owning the
loop, rather than calling ``create_chat_completion``, is what gives:

- exact usage in both modes: prompt tokens as tokenized, one completion token per sampled
  token (the end-of-generation token excluded, as llama-cpp-python counts them);
- a cancel check between tokens, so an abandoned call frees its context within one token;
- the same text, piece for piece, whether the caller streams or not.

Everything here runs in a worker thread that holds the context exclusively. Nothing in this
module imports ``llama_cpp`` at import time.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from polyroute import errors
from polyroute.types import FinishReason, ResponseFormat

__all__ = ["Done", "Job", "LlamaContext", "StopScanner"]

#: sampling defaults of llama-cpp-python's ``create_chat_completion`` (used when a request is silent)
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.95


@dataclass(slots=True)
class Job:
    """One chat completion, already checked and turned into plain values."""

    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: list[str]
    response_format: ResponseFormat | None


@dataclass(slots=True)
class Done:
    """The last item of a generation: why it ended and the exact token counts."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class StopScanner:
    """Cut text at the first stop sequence, holding back only what could still start one."""

    __slots__ = ("_pending", "_stops")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in dict.fromkeys(stops) if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text that is safe to release, whether a stop sequence was hit)."""
        if not self._stops:
            return text, False
        buf = self._pending + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:k]):
                    hold = k
                    break
        self._pending = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def finish(self, tail: str) -> str:
        """The held-back text once the output is over (a partial stop sequence is just text)."""
        text, hit = self.feed(tail)
        if not hit:
            text += self._pending
        self._pending = ""
        return text


def _grammar(fmt: ResponseFormat | None) -> Any:
    if fmt is None or fmt.type == "text":
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:
        if fmt.type == "json_schema":
            return LlamaGrammar.from_json_schema(orjson.dumps(fmt.json_schema).decode(), verbose=False)
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    except Exception as exc:
        raise errors.BadRequestError(f"response_format cannot be turned into a grammar: {exc}") from None


class LlamaContext:
    """A loaded ``llama_cpp.Llama`` plus its chat formatter and vocabulary; not thread-safe."""

    def __init__(self, llama: Any, n_ctx: int) -> None:
        import llama_cpp
        from llama_cpp import llama_chat_format

        self.llama = llama
        # llama.cpp may round the context up; llama-cpp-python's buffers keep the size asked for
        self.n_ctx: int = min(llama.n_ctx(), n_ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._is_eog: Callable[[Any, int], bool] = llama_cpp.llama_vocab_is_eog
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            eos, bos = llama.token_eos(), llama.token_bos()
            self.formatter: Any = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self._special_text(eos),
                bos_token=self._special_text(bos),
                stop_token_ids=[eos],
            )
        else:
            self.formatter = llama_chat_format.format_llama2

    def _special_text(self, token: int) -> str:
        return "" if token == -1 else bytes(self.llama.detokenize([token], special=True)).decode("utf-8", "replace")

    def close(self) -> None:
        self.llama.close()

    def prompt(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
        """The prompt's tokens and the template's own stop strings."""
        result = self.formatter(messages=messages)
        tokens = self.llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop = result.stop
        return list(tokens), ([stop] if isinstance(stop, str) else list(stop or []))

    def generate(self, job: Job, cancel: threading.Event, emit: Callable[[object], None]) -> tuple[int, bool]:
        """Emit text pieces then one :class:`Done`.

        Returns (tokens sampled, whether it ran to its end rather than stopping for ``cancel``).
        """
        try:
            prompt, template_stops = self.prompt(job.messages)
        except Exception as exc:  # a template that rejects these messages (roles, order...)
            raise errors.BadRequestError(f"the model's chat template rejected the messages: {exc}") from None
        budget = self.n_ctx - len(prompt)
        if budget <= 0:
            raise errors.ContextLengthExceededError(
                f"the prompt is {len(prompt)} tokens; the context holds {self.n_ctx} (raise n_ctx)"
            )
        limit = min(job.max_tokens or budget, budget)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        scanner = StopScanner([*job.stop, *template_stops])
        finish: FinishReason = "length"
        hit = False
        count = 0
        tokens = self.llama.generate(
            prompt,
            top_k=40,
            top_p=job.top_p,
            min_p=0.05,
            temp=job.temperature,
            repeat_penalty=1.0,
            grammar=_grammar(job.response_format),
        )
        try:
            for token in tokens:
                if cancel.is_set():
                    return count, False
                if self._is_eog(self._vocab, token):
                    finish = "stop"
                    break
                count += 1
                text, hit = scanner.feed(decoder.decode(self.llama.detokenize([token])))
                if text:
                    emit(text)
                if hit:
                    finish = "stop"
                    break
                if count >= limit:
                    break
        finally:
            tokens.close()
        if not hit:
            tail = scanner.finish(decoder.decode(b"", final=True))
            if tail:
                emit(tail)
        emit(Done(finish, len(prompt), count))
        return count, True
