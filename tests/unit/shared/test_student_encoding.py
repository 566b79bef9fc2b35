"""The one student input encoding (shared/student_encoding.py) on the real default students' tokenizers:
the token ids are those the trainer and the scorer each produced with their own copy before it moved
into shared/ (captured at cb9b911), so checkpoints trained before still score on the same tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, ByT5Tokenizer

from shared.packaged_models import minilm_path, smollm2_path
from shared.student_encoding import causal_answer_ids, encode_inputs, seq2seq_target_ids
from shared.student_format import StudentFormat
from shared.student_models import prepared_tokenizer

pytestmark = pytest.mark.slow  # the first use of SmolLM2 converts it (then cached in models_dir)

LONG = "A long story about many things, told slowly and with care. " * 6
ONE = StudentFormat.from_task(["text"], "label", ["negative", "positive"])
PAIR = StudentFormat.from_task(["premise", "hypothesis"], "label", ["entailment", "contradiction"])
THREE = StudentFormat.from_task(["question", "context", "title"], "label", ["yes", "no"])
QA = StudentFormat.from_task(["context", "question"], "answer", None)
QA_ROWS = [
    {
        "context": "The Eiffel Tower was finished in 1889.",
        "question": "When was it finished?",
        "answer": "1889",
    },
    {"context": LONG, "question": "What is it about?", "answer": "many things"},
]


@pytest.fixture(scope="module")
def minilm():
    return AutoTokenizer.from_pretrained(str(minilm_path()))


@pytest.fixture(scope="module")
def smollm2(models_dir: Path):
    folder = smollm2_path(models_dir)
    return prepared_tokenizer("causal", AutoTokenizer.from_pretrained(str(folder)), str(folder))


def test_a_classifier_reads_one_text_a_pair_or_a_first_segment_and_named_rest(minilm):
    one = encode_inputs("classifier", minilm, ONE, [{"text": "A gripping, beautifully acted film."}], 24)
    assert one == [
        {
            "input_ids": [101, 1037, 13940, 1010, 17950, 6051, 2143, 1012, 102],
            "attention_mask": [1] * 9,
            "token_type_ids": [0] * 9,
        }
    ]
    rows = [
        {"premise": "A man plays a guitar on stage.", "hypothesis": "A person makes music."},
        {"premise": LONG, "hypothesis": "It is short."},  # too long: the longer segment is cut
    ]
    pair = encode_inputs("classifier", minilm, PAIR, rows, 24)
    assert [r["input_ids"] for r in pair] == [
        [101, 1037, 2158, 3248, 1037, 2858, 2006, 2754, 1012, 102, 1037, 2711, 3084, 2189, 1012, 102],
        [101, 1037, 2146, 2466, 2055, 2116, 2477, 1010, 2409, 3254, 1998, 2007, 2729, 1012, 1037, 2146]
        + [2466, 2055, 102, 2009, 2003, 2460, 1012, 102],
    ]
    assert [r["token_type_ids"] for r in pair] == [[0] * 10 + [1] * 6, [0] * 19 + [1] * 5]
    three = encode_inputs(
        "classifier",
        minilm,
        THREE,
        [{"question": "Is it open?", "context": "The library opens at nine.", "title": "Library"}],
        24,
    )
    assert three[0]["input_ids"] == [
        *[101, 2003, 2009, 2330, 1029, 102],  # [CLS] Is it open? [SEP]
        *[6123, 1024, 1996, 3075, 7480, 2012, 3157, 1012, 2516, 1024, 3075, 102],  # context: ... title: ...
    ]
    assert three[0]["token_type_ids"] == [0] * 6 + [1] * 12


def test_a_causal_prompt_loses_its_beginning_never_its_answer_cue(smollm2):
    smollm2.truncation_side = "right"  # however the tokenizer was loaded: the encoding cuts on the left
    rows = encode_inputs("causal", smollm2, QA, QA_ROWS, 24)
    answer_cue = [198, 11247, 42]  # "\nanswer:"
    assert [r["input_ids"] for r in rows] == [
        [378, 414, 46682, 18669, 436, 7721, 281, 216, 33, 40, 40, 41, 30, 198, 19945, 42, 1550, 436]
        + [357, 7721, 47, *answer_cue],
        [986, 1977, 563, 800, 1495, 28, 3783, 6351, 284, 351, 1176, 30, 216, 198, 19945, 42, 1812, 314]
        + [357, 563, 47, *answer_cue],
    ]
    assert all(r["attention_mask"] == [1] * 24 for r in rows)
    answers = causal_answer_ids(smollm2, [QA.causal_target(r) for r in QA_ROWS], 8)
    assert answers == [[216, 33, 40, 40, 41, smollm2.eos_token_id], [800, 1495, smollm2.eos_token_id]]
    assert smollm2.eos_token_id == 2


def test_a_few_shot_prefix_is_never_cut(smollm2):
    prefix = QA.few_shot_prefix(QA_ROWS[:1])
    (row,) = encode_inputs("causal", smollm2, QA, QA_ROWS[1:], 24, prefix=prefix)
    head = [9001, 42, 378, 414, 46682, 18669, 436, 7721, 281, 216, 33, 40, 40, 41, 30, 198, 19945, 42]
    head += [1550, 436, 357, 7721, 47, 198, 11247, 42, 216, 33, 40, 40, 41, 1116]
    assert row["input_ids"] == head + encode_inputs("causal", smollm2, QA, QA_ROWS[1:], 24)[0]["input_ids"]
    with pytest.raises(ValueError, match="classifier student takes no prefix"):
        encode_inputs("classifier", smollm2, ONE, [{"text": "x"}], 24, prefix=prefix)


def test_a_seq2seq_source_and_target_as_the_tiny_t5_reads_them():
    t5 = ByT5Tokenizer()
    rows = encode_inputs("seq2seq", t5, QA, QA_ROWS, 24)
    assert [r["input_ids"] for r in rows] == [
        [102, 114, 113, 119, 104, 123, 119, 61, 35, 87, 107, 104, 35, 72, 108, 105, 105, 104, 111, 35]
        + [87, 114, 122, 1],
        [102, 114, 113, 119, 104, 123, 119, 61, 35, 68, 35, 111, 114, 113, 106, 35, 118, 119, 114, 117]
        + [124, 35, 100, 1],
    ]
    targets = seq2seq_target_ids(t5, [QA.target(r) or "" for r in QA_ROWS], 8)
    assert targets == [[52, 59, 59, 60, 1], [112, 100, 113, 124, 35, 119, 107, 1]]
