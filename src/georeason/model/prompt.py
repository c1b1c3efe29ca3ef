"""The instruction template and its token sequences (paper Sec. 4.2.2; docs/released_code.md#input-schema for the
released text).

Sequences are built already expanded: every position carries a token id and a kind (text, image,
description, answer), so the model splices visual tokens by kind, never through magic token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import torch

from georeason.config import PromptConfig
from georeason.errors import GeoreasonError

IGNORE_INDEX = -100


class TokenKind(IntEnum):
    TEXT = 0
    IMAGE = 1  # replaced by the connector's visual tokens
    DESCRIPTION = 2  # " " + question + [SEG]: mean-pooled into the description embedding p
    ANSWER = 3  # answer + [SEG]: teacher-forced in training, generated at inference


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # [B,L] long; image positions hold the pad id
    token_kind: torch.Tensor  # [B,L] long, TokenKind values
    attention_mask: torch.Tensor  # [B,L] long, 1 = real position (right padding)
    labels: torch.Tensor  # [B,L] long, IGNORE_INDEX where not supervised

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(*(t.to(device) for t in (self.input_ids, self.token_kind, self.attention_mask,
                                                     self.labels)))


def select_rows(prompt: PromptBatch, rows: list[int]) -> PromptBatch:
    """The prompts of the given rows, in that order (the same padded length)."""
    return PromptBatch(*(t[rows] for t in (prompt.input_ids, prompt.token_kind, prompt.attention_mask,
                                           prompt.labels)))


def load_tokenizer(folder: str | Path):
    """The transformers tokenizer saved in a model folder; GeoreasonError naming the folder when unreadable."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise GeoreasonError(f"{folder}: cannot load the tokenizer ({error})") from None


class PromptBuilder:
    """Turns (question, answer, task) into expanded token sequences with a transformers tokenizer."""

    def __init__(self, tokenizer, config: PromptConfig, num_visual_tokens: int, max_length: int):
        self.tokenizer = tokenizer
        self.config = config
        self.num_visual_tokens = num_visual_tokens
        self.max_length = max_length
        vocab = tokenizer.get_vocab()
        for token in (config.seg_token, config.pad_token):
            if token not in vocab:
                raise GeoreasonError(f"tokenizer has no {token!r} token; build it with georeason init")
        self.seg_id = vocab[config.seg_token]
        self.pad_id = vocab[config.pad_token]
        if tokenizer.eos_token is None:
            raise GeoreasonError("tokenizer has no end-of-sequence token")
        self.eos_id = tokenizer.eos_token_id
        self._piece_cache: dict[str, tuple[list[int], ...]] = {}

    # The template pieces around the placeholders <image>, <refer>, <seg> (dropped) and <answer>.
    def _pieces(self, task: str) -> tuple[str, str, str, str]:
        task_name = self.config.reasoning_task if task == "reasoning" else self.config.referring_task
        before_image = f"[INST] <<SYS>>\n{self.config.system}\n<</SYS>>\n\nThis is an image "
        before_description = (f", Please doing {task_name} according to the following instruction:\n")
        if task == "reasoning":
            return before_image, before_description, " [/INST] Sure, It is ", ". \n"
        return before_image, before_description, " [/INST] \nSure. It is ", ". "

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _piece_ids(self, task: str) -> tuple[list[int], list[int], list[int], list[int]]:
        """The template pieces of `task` as token ids, tokenised once per builder (they never change)."""
        if task not in self._piece_cache:
            self._piece_cache[task] = tuple(self._encode(piece) for piece in self._pieces(task))
        return self._piece_cache[task]

    def question_ids(self, question: str) -> list[int]:
        """The question's own token ids as they stand in the prompt (" " + question; no special tokens)."""
        return self._encode(" " + question.strip())

    def template_length(self, task: str = "reasoning", for_generation: bool = True) -> int:
        """Prompt positions around the question (template text, image positions, [SEG]), without an answer."""
        if task not in ("reasoning", "referring"):
            raise GeoreasonError(f"task must be 'reasoning' or 'referring', got {task!r}")
        before_image, before_description, after_description, before_answer = self._piece_ids(task)
        length = len(before_image) + self.num_visual_tokens + len(before_description) + 1 + len(after_description)
        if task == "reasoning":
            return length + len(before_answer)
        return length if for_generation else length + len(before_answer) + 1

    def encode(self, question: str, answer: str | None = None, task: str = "reasoning",
               for_generation: bool = False) -> dict[str, list[int]]:
        """One sample as lists (ids, kinds, labels). `for_generation` stops right before the answer."""
        if task not in ("reasoning", "referring"):
            raise GeoreasonError(f"task must be 'reasoning' or 'referring', got {task!r}")
        if not question or not question.strip():
            raise GeoreasonError("the question is empty")
        return self.encode_ids(self.question_ids(question), answer, task, for_generation)

    def encode_ids(self, question_ids: list[int], answer: str | None = None, task: str = "reasoning",
                   for_generation: bool = False) -> dict[str, list[int]]:
        """encode() for a question already tokenised by question_ids(): the question is not tokenised again."""
        if task not in ("reasoning", "referring"):
            raise GeoreasonError(f"task must be 'reasoning' or 'referring', got {task!r}")
        if not question_ids:
            raise GeoreasonError("the question is empty")
        before_image, before_description, after_description, before_answer = self._piece_ids(task)
        ids: list[int] = []
        kinds: list[int] = []
        labels: list[int] = []

        def add(tokens: list[int], kind: TokenKind, supervised: bool = False) -> None:
            ids.extend(tokens)
            kinds.extend([int(kind)] * len(tokens))
            labels.extend(tokens if supervised else [IGNORE_INDEX] * len(tokens))

        add(before_image, TokenKind.TEXT)
        add([self.pad_id] * self.num_visual_tokens, TokenKind.IMAGE)
        add(before_description, TokenKind.TEXT)
        add(list(question_ids) + [self.seg_id], TokenKind.DESCRIPTION)
        add(after_description, TokenKind.TEXT)
        if task == "reasoning":
            add(before_answer, TokenKind.TEXT)
            if not for_generation:
                add(self._encode(answer or self.config.empty_target_answer) + [self.seg_id], TokenKind.ANSWER,
                    supervised=True)
                add(self._encode(". ") + [self.eos_id], TokenKind.TEXT, supervised=True)
        elif not for_generation:
            add(before_answer + [self.eos_id], TokenKind.TEXT)
        if len(ids) > self.max_length:
            raise GeoreasonError(
                f"the prompt is {len(ids)} tokens long, over the model's limit of {self.max_length}; "
                "shorten the question or the answer"
            )
        return {"input_ids": ids, "token_kind": kinds, "labels": labels}

    def collate(self, samples: list[dict[str, list[int]]]) -> PromptBatch:
        """Right-pad encoded samples into a batch (the causal mask makes right padding harmless)."""
        length = max(len(s["input_ids"]) for s in samples)
        batch = len(samples)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        token_kind = torch.zeros((batch, length), dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[row, :n] = torch.tensor(sample["input_ids"])
            token_kind[row, :n] = torch.tensor(sample["token_kind"])
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.tensor(sample["labels"])
        return PromptBatch(input_ids, token_kind, attention_mask, labels)

    def batch(self, questions: list[str] | list[list[int]], answers: list[str | None] | None = None,
              tasks: list[str] | None = None, for_generation: bool = False) -> PromptBatch:
        """Encode and collate; each question is a string or the ids question_ids() gave for it."""
        answers = answers or [None] * len(questions)
        tasks = tasks or ["reasoning"] * len(questions)
        return self.collate([self.encode(q, a, t, for_generation) if isinstance(q, str)
                             else self.encode_ids(q, a, t, for_generation)
                             for q, a, t in zip(questions, answers, tasks)])

    def decode_answer(self, token_ids: list[int]) -> str:
        if self.seg_id in token_ids:
            token_ids = token_ids[: token_ids.index(self.seg_id)]
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()


def prompt_builder_for_config(tokenizer, config) -> PromptBuilder:
    """The PromptBuilder of a SegEarthConfig: its template, image positions and the LLM's context length."""
    max_length = int(config.llm.hf_config.get("max_position_embeddings", 2048))
    return PromptBuilder(tokenizer, config.prompt, config.num_visual_tokens, max_length)
