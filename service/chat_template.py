"""Chat templates: the Jinja text in a manifest's `chat.template` that turns OpenAI chat messages into
the model's prompt (docs/artifact-contract.md).

A template arrives with a model folder, which may come from anyone, so it is rendered in jinja2's
`ImmutableSandboxedEnvironment`, as Hugging Face transformers renders chat templates: no access to
Python internals, no mutation of what it is given. Whitespace, loop controls, `raise_exception` and
the special-token variables follow transformers too, so templates written for it read the same here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The template refused or could not render these messages (the client's request is at fault)."""


def _raise_exception(message: str) -> NoReturn:
    """What templates call to refuse a conversation (the name transformers gives it)."""
    raise ChatTemplateError(str(message))


_ENV = ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
)
_ENV.globals["raise_exception"] = _raise_exception


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled template and the stop strings chat requests get when they give none."""

    model: str
    template: jinja2.Template
    stop: tuple[str, ...]
    special_tokens: dict[str, str]

    @classmethod
    def compile(
        cls, model: str, chat: dict[str, Any], special_tokens: dict[str, str] | None = None
    ) -> ChatTemplate:
        """Raises ValueError naming the line when the template does not parse (the model is refused)."""
        try:
            template = _ENV.from_string(chat["template"])
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"chat.template: line {exc.lineno}: {exc.message}") from None
        return cls(model, template, tuple(chat.get("stop") or ()), dict(special_tokens or {}))

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt; ChatTemplateError when the template refuses the messages or fails on them."""
        try:
            return self.template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as exc:  # undefined names, sandbox refusals
            raise ChatTemplateError(f"the chat template of {self.model!r} failed: {exc}") from None
