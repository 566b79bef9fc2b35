"""The rest of a new example in the loop's field format, as a constraint for guided decoding.

One description (`FieldFormat`, built by prompts.field_format from a planned prompt) and one
rendering per engine family: a regular expression for vLLM's structured outputs, a GBNF grammar for
llama.cpp's grammar sampler. Both accept the same texts: the field the prompt ends with (its marker
already written), then each remaining field on its own line under its marker, then any number of
line ends (the blank line that ends an example is a stop string: the engine stops there). The
completion may end wherever the last field could: ending where free text would have ended keeps
guided decoding from changing a completion that parses anyway (an end-of-text token or a "\\n\\n\\n"
the grammar refused pushed gemma-3-270m on to write longer values).

A field whose examples are all JSON objects (NL4OPT's formulations) is a one-line JSON object in
the grammar; a regular expression cannot count brackets, so the regex keeps only its braces.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# A value's first character: not a space (the marker's own space comes before it) nor a line end.
# Spelled out rather than \s because GBNF has no \s.
_FIRST = r"[^ \t\r\n]"
_REST = r"[^\n]"

# JSON on one line (the field format's values are lines): no line ends, at most one space between
# tokens, as the examples write it.
_JSON_RULES = r"""json-object ::= "{" jws ( json-member ( jws "," jws json-member )* )? jws "}"
json-member ::= json-string jws ":" jws json-value
json-array ::= "[" jws ( json-value ( jws "," jws json-value )* )? jws "]"
json-value ::= json-object | json-array | json-string | json-number | "true" | "false" | "null"
json-string ::= "\"" ( [^"\\\n\r] | "\\" ["\\/bfnrt] | "\\u" [0-9a-fA-F]{4} )* "\""
json-number ::= "-"? [0-9]+ ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
jws ::= " "?"""


@dataclass(frozen=True)
class FieldSlot:
    """One field still to write: its marker ("" for the field the prompt ends with), the fewest
    characters its value may have, and whether the value is a JSON object."""

    marker: str
    min_chars: int = 1
    json_object: bool = False


@dataclass(frozen=True)
class FieldFormat:
    slots: tuple[FieldSlot, ...]

    def regex(self) -> str:
        """For vLLM (StructuredOutputsParams(regex=...)); matched against the whole completion."""
        parts = []
        for k, slot in enumerate(self.slots):
            if slot.json_object:
                value = r" \{[^\n]*\}"
            else:
                value = f" {_FIRST}{_REST}{{{max(slot.min_chars, 1) - 1},}}"
            parts.append(value if k == 0 else f"\\n{re.escape(slot.marker)}:{value}")
        return "".join(parts) + "\\n*"

    def gbnf(self) -> str:
        """For llama.cpp (llama_sampler_init_grammar, root rule "root")."""
        root, rules = [], []
        for k, slot in enumerate(self.slots):
            name = f"field{k}"
            if k:
                root.append(_gbnf_literal(f"\n{slot.marker}:"))
            root.append(name)
            if slot.json_object:
                rules.append(f'{name} ::= " " json-object')
            else:
                rules.append(f'{name} ::= " " {_FIRST} {_REST}{{{max(slot.min_chars, 1) - 1},}}')
        root.append(_gbnf_literal("\n") + "*")
        if any(slot.json_object for slot in self.slots):
            rules.append(_JSON_RULES)
        return "\n".join([f"root ::= {' '.join(root)}", *rules]) + "\n"


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _gbnf_literal(text: str) -> str:
    """A GBNF string literal: JSON's escapes (\\n, \\", \\\\) are GBNF's too."""
    return json.dumps(text, ensure_ascii=False)
