"""Chat templates render in jinja2's immutable sandbox, as transformers renders them: a template from a
model folder cannot reach Python internals or change what it is given, and its failures are the
request's (ChatTemplateError, a 400) or the model's (a template that does not parse is refused)."""

import pytest

from service.chat_template import ChatTemplate, ChatTemplateError
from tests.api.conftest import committed_chat_section

MESSAGES = [{"role": "user", "content": "Hello"}]


def compiled(template: str) -> ChatTemplate:
    return ChatTemplate.compile("m", {"template": template}, {"eos_token": "<|eos|>"})


def test_the_committed_play_script_template_renders_a_play():
    template = ChatTemplate.compile("shakespeare-gpt", committed_chat_section())
    messages = [
        {"role": "system", "content": "  Verona.  "},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Good morrow."},
        {"role": "user", "content": "Farewell", "name": "MERCUTIO"},
    ]
    expected = "[Verona.]\n\nROMEO:\nHello\n\nJULIET:\nGood morrow.\n\nMERCUTIO:\nFarewell\n\nJULIET:\n"
    assert template.render(messages) == expected
    assert template.render(messages, add_generation_prompt=False) == expected.removesuffix("JULIET:\n")
    assert template.stop == ("\n\n",)


def test_special_tokens_and_raise_exception_are_there_as_in_transformers():
    assert compiled("{{ messages[0].content }}{{ eos_token }}").render(MESSAGES) == "Hello<|eos|>"
    refusing = compiled(
        "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="system first"):
        refusing.render(MESSAGES)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # the classic sandbox escape
        "{{ messages.append({'role': 'x'}) }}",  # mutating the input: the immutable sandbox refuses
        "{{ messages[0].content.format_map }}{{ cycler.__init__.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_unsafe_templates_as_a_request_error(template):
    with pytest.raises(ChatTemplateError):
        compiled(template).render(MESSAGES)


def test_a_template_that_does_not_parse_is_refused_naming_the_line():
    with pytest.raises(ValueError, match=r"^chat.template: line 2: "):
        compiled("ok\n{% for m in messages %}")
