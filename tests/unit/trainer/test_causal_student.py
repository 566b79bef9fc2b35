"""The causal student's prompt, targets and batches: the loss sees the answer and its end token only."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from services.trainer.losses import IGNORE_INDEX
from services.trainer.students import SMOLLM2, Example, Student, resolve_model_name
from shared.spec import RunSpec
from shared.student_format import StudentFormat
from tests.support import SENTIMENT_TASK

QA = StudentFormat.from_task(["context", "question"], "answer", None)
WORDS = [
    "<pad>",
    "<eos>",
    "<unk>",
    "context:",
    "question:",
    "answer:",
    "Paris",
    "is",
    "in",
    "France.",
    "Where",
    "?",
]


def word_tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.truncation_side = "left"
    return tokenizer


def student(max_length: int = 32) -> Student:
    return Student("causal", None, word_tokenizer(), QA, max_length, max_target_length=3)  # type: ignore[arg-type]


def test_the_fitted_answer_length_cuts_no_answer_and_leaves_room():
    examples = [
        Example(fields={"context": "Paris", "question": "?", "answer": "Paris is in France."}),  # 4 words
        Example(fields={"context": "Paris", "question": "?", "answer": "France."}),
    ]
    fitted = student().fitted_answer_length(examples)  # student() cuts answers at 3 tokens
    assert fitted == 4 + 1 + 8  # the longest answer and its end token, then at least 8 more
    long = [Example(fields={"context": "Paris", "question": "?", "answer": " ".join(["Paris"] * 20)})]
    assert student().fitted_answer_length(long) == 2 * 21  # or twice the longest
    s = Student("causal", None, word_tokenizer(), QA, 32, max_target_length=fitted)  # type: ignore[arg-type]
    assert s.encode_targets(examples)[0][:-1] == [WORDS.index(w) for w in ["Paris", "is", "in", "France."]]


def test_prompt_names_the_fields_and_ends_with_the_answer_cue():
    fields = {"context": "Paris is in France.", "question": "Where is Paris ?", "answer": "France."}
    assert QA.causal_prompt(fields) == "context: Paris is in France.\nquestion: Where is Paris ?\nanswer:"
    assert QA.causal_target(fields) == " France."
    shots = QA.few_shot_prefix([fields, {"context": "Paris", "question": "?", "answer": "Paris"}])
    assert shots == f"{QA.causal_prompt(fields)} France.\n\ncontext: Paris\nquestion: ?\nanswer: Paris\n\n"


def test_a_few_shot_prefix_is_never_cut_and_the_prompt_is_cut_as_in_training():
    shot = {"context": "Paris", "question": "?", "answer": "France."}
    long = Example(fields={"context": " ".join(["Paris"] * 40), "question": "Where is Paris ?"})
    plain = student(max_length=8)
    prefixed = replace(plain, prefix=QA.few_shot_prefix([shot]))
    prefix_ids = plain.tokenizer(prefixed.prefix)["input_ids"]
    rows = prefixed.encode_inputs([long])
    assert rows[0]["input_ids"] == prefix_ids + plain.encode_inputs([long])[0]["input_ids"]
    assert len(rows[0]["input_ids"]) == len(prefix_ids) + 8 and rows[0]["attention_mask"] == [1] * len(
        rows[0]["input_ids"]
    )


def test_labels_are_shifted_answer_tokens_with_prompt_and_padding_masked():
    s = student()
    examples = [
        Example(
            fields={"context": "Paris is in France.", "question": "Where is Paris ?", "answer": "France."}
        ),
        Example(fields={"context": "Paris", "question": "?", "answer": "Paris is in France."}),
    ]
    inputs, targets = s.encode_inputs(examples), s.encode_targets(examples)
    eos = s.tokenizer.eos_token_id
    assert targets[0] == [WORDS.index("France."), eos]
    assert targets[1] == [WORDS.index("Paris"), WORDS.index("is"), eos]  # cut to max_target_length
    batch = s.collate(inputs, targets)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    for row, (prompt, target) in enumerate(zip(inputs, targets, strict=True)):
        n_prompt, n = len(prompt["input_ids"]), len(prompt["input_ids"]) + len(target)
        # labels[i] is what logits[i] must predict: the next token, on the answer only.
        assert labels[row, : n_prompt - 1].eq(IGNORE_INDEX).all()
        assert labels[row, n_prompt - 1 : n - 1].tolist() == ids[row, n_prompt:n].tolist() == target
        assert labels[row, n - 1 :].eq(IGNORE_INDEX).all() and mask[row, n:].eq(0).all()


def test_decoding_batches_are_left_padded_and_long_prompts_keep_their_end():
    s = student(max_length=5)
    examples = [Example(fields={"context": "Paris is in France.", "question": "Where ?"})]
    prompt = s.encode_inputs(examples)[0]["input_ids"]
    assert s.tokenizer.convert_ids_to_tokens(prompt) == ["France.", "question:", "Where", "?", "answer:"]
    short = Example(fields={"context": "Paris", "question": ""})  # 4 tokens
    batch = s.collate(s.encode_inputs([*examples, short]), None)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert batch["input_ids"][:, -1].tolist() == [WORDS.index("answer:")] * 2


@pytest.mark.parametrize(
    ("student_spec", "kind"),
    [
        ({}, "causal"),  # the default student of seq2seq tasks
        ({"model": "tiny-t5"}, "seq2seq"),
        ({"model": "google/flan-t5-base"}, "seq2seq"),
        ({"model": "Qwen/Qwen2.5-0.5B"}, "causal"),
        ({"model": "tiny-t5", "kind": "causal"}, "causal"),
    ],
)
def test_seq2seq_tasks_get_a_causal_student_unless_the_model_is_an_encoder_decoder(student_spec, kind):
    task = {
        "type": "seq2seq",
        "description": "answer",
        "input_fields": ["context", "question"],
        "output_field": "answer",
        "seed_examples": [{"context": "c", "question": "q", "answer": "a"}] * 2,
    }
    assert RunSpec.model_validate({"name": "qa", "task": task, "student": student_spec}).student_kind == kind
    classification = RunSpec.model_validate({"name": "s", "task": SENTIMENT_TASK})
    assert classification.student_kind == "classifier"
    assert resolve_model_name("default", "causal", ["default"]) == SMOLLM2
