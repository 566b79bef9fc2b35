"""The rest of a new example in the loop's field format, as a constraint for guided decoding.

One description (`FieldFormat`, built by prompts.field_format from a planned prompt) and one
rendering per engine family: a regular expression for vLLM's structured outputs, a GBNF grammar for
llama.cpp's grammar sampler. Both accept the same texts: the field the prompt ends with (its marker
already written), then each remaining field on its own line under its marker, then the end of the
line and, optionally, the blank line that ends an example (a stop string: the engine stops there;
once the constraint is complete vLLM and llama.cpp allow only end-of-text). The blank line is
allowed because it is how the model ends an example on its own: Gemma writes "\n\n" as one token,
and forbidding it pushed the model on to write longer values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# A value's first character: not a space (the marker's own space comes before it) nor a line end.
# Spelled out rather than \s because GBNF has no \s.
_FIRST = r"[^ \t\r\n]"
_REST = r"[^\n]"


@dataclass(frozen=True)
class FieldSlot:
    """One field still to write: its marker ("" for the field the prompt ends with) and the
    fewest characters its value may have."""

    marker: str
    min_chars: int = 1


@dataclass(frozen=True)
class FieldFormat:
    slots: tuple[FieldSlot, ...]

    def regex(self) -> str:
        """For vLLM (StructuredOutputsParams(regex=...)); matched against the whole completion."""
        parts = []
        for k, slot in enumerate(self.slots):
            value = f" {_FIRST}{_REST}{{{max(slot.min_chars, 1) - 1},}}"
            parts.append(value if k == 0 else f"\\n{re.escape(slot.marker)}:{value}")
        return "".join(parts) + "\\n\\n?"

    def gbnf(self) -> str:
        """For llama.cpp (llama_sampler_init_grammar, root rule "root")."""
        names = [f"field{k}" for k in range(len(self.slots))]
        root = []
        rules = []
        for k, (slot, name) in enumerate(zip(self.slots, names, strict=True)):
            if k:
                root.append(_gbnf_literal(f"\n{slot.marker}:"))
            root.append(name)
            rest = max(slot.min_chars, 1) - 1
            rules.append(f'{name} ::= " " {_FIRST} {_REST}{{{rest},}}')
        root.append(_gbnf_literal("\n") + " " + _gbnf_literal("\n") + "?")
        return "\n".join([f"root ::= {' '.join(root)}", *rules]) + "\n"


def _gbnf_literal(text: str) -> str:
    """A GBNF string literal: JSON's escapes (\\n, \\", \\\\) are GBNF's too."""
    return json.dumps(text, ensure_ascii=False)
