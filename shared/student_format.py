"""How a sample's fields become a student's input text and target text.

The trainer and the scorer never import each other, yet both must turn the same sample into the
same student input, or energies would be computed on text the student was not trained on. This
module is that one definition. It holds text rules only (no tokenizer, no torch): the tokens are
shared/student_encoding.py's.

Rules:
- classifier, 1 input field: the field's text.
- classifier, 2 input fields (premise/hypothesis, question/sentence): a text PAIR, encoded with the
  tokenizer's pair encoding ([CLS] a [SEP] b [SEP] for BERT-style models).
- classifier, 3-4 input fields: the first field is segment A, the others are joined as
  "name: value" lines into segment B (keeps the primary text intact under truncation).
- seq2seq source: "name: value" segments joined by a newline, T5-style ("question: ... context: ...").
- causal prompt: the seq2seq source and a last line naming the output field ("...\nanswer:"); the
  causal target is the output text after one space, and the answer ends at the end-of-sequence token
  (the student is trained to emit it) or at the first newline when decoding.
- target: the output field's text; for classification the label (Sample.label wins over the field,
  since the generator stores the label it asked for there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

StudentKind = Literal["classifier", "seq2seq", "causal"]


@dataclass(frozen=True)
class StudentFormat:
    input_fields: tuple[str, ...]
    output_field: str
    labels: tuple[str, ...] | None = None

    @classmethod
    def from_task(
        cls, input_fields: Sequence[str], output_field: str, labels: Sequence[str] | None
    ) -> StudentFormat:
        return cls(tuple(input_fields), output_field, tuple(labels) if labels else None)

    def missing_inputs(self, fields: Mapping[str, str]) -> list[str]:
        return [name for name in self.input_fields if not isinstance(fields.get(name), str)]

    def classifier_text(self, fields: Mapping[str, str]) -> tuple[str, str | None]:
        """(segment A, segment B or None) for a sequence-classification encoder."""
        values = [fields[name] for name in self.input_fields]
        if len(values) == 1:
            return values[0], None
        if len(values) == 2:
            return values[0], values[1]
        rest = "\n".join(f"{name}: {fields[name]}" for name in self.input_fields[1:])
        return values[0], rest

    def seq2seq_source(self, fields: Mapping[str, str]) -> str:
        return "\n".join(f"{name}: {fields[name]}" for name in self.input_fields)

    def causal_prompt(self, fields: Mapping[str, str]) -> str:
        return f"{self.seq2seq_source(fields)}\n{self.output_field}:"

    def causal_target(self, fields: Mapping[str, str], label: str | None = None) -> str:
        """The continuation a causal student learns after its prompt (without the end token)."""
        return f" {(self.target(fields, label) or '').strip()}"

    def few_shot_prefix(self, shots: Sequence[Mapping[str, str]]) -> str:
        """The seed examples as solved prompts, one blank line apart, before a causal prompt."""
        return "".join(f"{self.causal_prompt(s)}{self.causal_target(s)}\n\n" for s in shots)

    def target(self, fields: Mapping[str, str], label: str | None = None) -> str | None:
        """The text a seq2seq student must produce (the label for classification)."""
        if label is not None:
            return label
        value = fields.get(self.output_field)
        return value if isinstance(value, str) else None

    def label_index(self, fields: Mapping[str, str], label: str | None = None) -> int | None:
        """Class index for a classifier; None when the label is missing or outside the label set."""
        if not self.labels:
            return None
        value = self.target(fields, label)
        if value is None:
            return None
        value = value.strip()
        return self.labels.index(value) if value in self.labels else None
