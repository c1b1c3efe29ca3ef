"""SegEarthProcessor: the tokenizer and image processor of a model folder, from (images, questions) to inputs and back.

Paper Sec. 4.2.2 (the prompt) and docs/released_code.md#preprocessing, #input-schema and #inference: every
path (GeoReasoner, evaluation, the service, training) is processor(...) -> model.segment -> post_process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from georeason.config import SegEarthConfig
from georeason.data.transforms import Geometry, SampleTransform, preprocess_image, restore_to_original
from georeason.errors import GeoreasonError
from georeason.filenames import is_utf8, printable

CONFIG_NAME = "config.json"


def clean_answer(text: str) -> str:
    """A decoded answer without control characters (NUL cannot be stored in GPKG or TIFF tags), stripped.

    Newlines and tabs stay. The one cleaning every path applies (predict, evaluate, serve).
    """
    return "".join(char for char in text if char.isprintable() or char in "\n\t").strip()


@dataclass(frozen=True)
class Question:
    """A checked question and its token ids as they stand in the prompt (tokenised once)."""

    text: str  # stripped, valid UTF-8, non-empty
    token_ids: tuple[int, ...]  # " " + text, no special tokens


@dataclass
class ProcessorOutput:
    """Model inputs for a batch of B images and questions."""

    pixel_values: Any  # torch.float32 [B,3,S,S], (pixel - pixel_mean) / pixel_std of the config, zero padded
    prompt: Any  # georeason.model.PromptBatch, generation prompts (for_generation=True)
    geometries: list[Geometry]  # where each image sits in the S x S input, to undo the padding
    questions: list[Question]

    def to(self, device: Any, dtype: Any = None) -> ProcessorOutput:
        """The tensors on `device` (pixel_values also in `dtype` when given: the model's weight dtype)."""
        pixels = self.pixel_values.to(device) if dtype is None else self.pixel_values.to(device, dtype)
        return ProcessorOutput(pixels, self.prompt.to(device), self.geometries, self.questions)


@dataclass
class PostProcessed:
    """One prediction at the image's original size."""

    probability: np.ndarray  # float32 [H,W] in [0, 1] (sigmoid of the restored logits); 0 on invalid pixels
    mask: np.ndarray  # bool [H,W]: probability > threshold
    answer: str | None  # decoded and cleaned (clean_answer); None when no answer was generated


class SegEarthProcessor:
    """Tokenizer + image processor of one SegEarth-R1 model, in the transformers sense.

    Preprocessing reads the model config: image_size S, pixel_mean and pixel_std (RGB, 0-255 scale), so a
    model trained with other statistics is normalised with its own. Questions are checked and tokenised
    once (Question); the question limit is computed once from the template: the context
    (llm max_position_embeddings) minus the template around the question minus the answer room
    (config.prompt.max_answer_tokens).
    """

    def __init__(self, tokenizer: Any, config: SegEarthConfig) -> None:
        from georeason.model.prompt import prompt_builder_for_config

        mean, std = list(config.pixel_mean), list(config.pixel_std)
        if len(mean) != 3 or len(std) != 3 or not all(float(s) > 0 for s in std):
            raise GeoreasonError(f"config pixel_mean/pixel_std: expected 3 values each (RGB), std > 0; got "
                                 f"pixel_mean {mean}, pixel_std {std}")
        self.config = config
        self.tokenizer = tokenizer
        self.image_size = int(config.image_size)
        self.pixel_mean = tuple(float(m) for m in mean)
        self.pixel_std = tuple(float(s) for s in std)
        self.prompts = prompt_builder_for_config(tokenizer, config)
        self.max_question_tokens = (self.prompts.max_length
                                    - self.prompts.template_length("reasoning", for_generation=True)
                                    - int(config.prompt.max_answer_tokens))

    # -- folders -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, config: SegEarthConfig | None = None) -> SegEarthProcessor:
        """The processor of a model folder: its tokenizer files and config.json (or `config`, when the model
        was loaded already). Raises GeoreasonError naming the folder when either cannot be read."""
        from georeason.model.prompt import load_tokenizer

        folder = Path(folder)
        if config is None:
            if not (folder / CONFIG_NAME).is_file():
                raise GeoreasonError(f"{folder / CONFIG_NAME}: missing; a model folder has config.json")
            config = SegEarthConfig.load(folder / CONFIG_NAME)
        return cls(load_tokenizer(folder), config)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the tokenizer files and, when the folder has none, config.json (the preprocessing lives in
        the model's config, so a folder never holds two copies of pixel_mean/pixel_std)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        if not (folder / CONFIG_NAME).exists():
            self.config.save(folder / CONFIG_NAME)

    # -- inputs ------------------------------------------------------------------------------------
    def question(self, question: Any, check_limit: bool = True) -> Question:
        """Check and tokenise a question once. A Question passes through unchanged.

        Raises GeoreasonError for a non-string or empty question, text that is not UTF-8, or (with
        check_limit) more than max_question_tokens tokens, naming the limit.
        """
        if isinstance(question, Question):
            return question
        if not isinstance(question, str) or not question.strip():
            raise GeoreasonError("question: the question is empty; expected a text question about the image")
        text = question.strip()
        if not is_utf8(text):
            # Bytes that are not UTF-8 (e.g. a command line in another encoding) reach Python as surrogates.
            raise GeoreasonError(f"question: not valid UTF-8 text ({printable(text)[:60]!r}); "
                                 "give the question in UTF-8")
        ids = tuple(self.prompts.question_ids(text))
        if check_limit and len(ids) > self.max_question_tokens:
            raise GeoreasonError(
                f"question: {len(ids)} tokens is over this model's limit of {self.max_question_tokens} tokens "
                f"(preset {self.config.preset}); shorten the question ({text[:40]!r}...)")
        return Question(text, ids)

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """uint8 RGB [H,W,3] -> (float32 [3,S,S] normalised with the config's mean/std, Geometry)."""
        return preprocess_image(rgb, self.image_size, self.pixel_mean, self.pixel_std)

    def pixel_values(self, images: Sequence[np.ndarray]) -> tuple[Any, list[Geometry]]:
        """uint8 RGB images [H,W,3] -> (torch.float32 [B,3,S,S], their geometries)."""
        import torch

        prepared = [self.preprocess(rgb) for rgb in images]
        return torch.from_numpy(np.stack([p for p, _ in prepared])), [g for _, g in prepared]

    def sample_transform(self) -> SampleTransform:
        """The dataset transform (evaluation, training) with this model's image size, mean and std."""
        return SampleTransform(self.image_size, self.pixel_mean, self.pixel_std)

    def prompt(self, questions: Sequence[Any], answers: Sequence[str | None] | None = None,
               tasks: Sequence[str] | None = None, for_generation: bool = True, check_limit: bool = False):
        """PromptBatch for questions (str or Question), with answers for teacher forcing in training."""
        checked = [self.question(q, check_limit) for q in questions]
        return self.prompts.batch([list(q.token_ids) for q in checked], list(answers) if answers else None,
                                  list(tasks) if tasks else None, for_generation)

    def __call__(self, images: Sequence[np.ndarray], questions: Sequence[Any],
                 tasks: Sequence[str] | None = None, check_limit: bool = True) -> ProcessorOutput:
        """uint8 RGB images [H,W,3] and one question (str or Question) each -> ProcessorOutput.

        Raises GeoreasonError when the counts differ, or for a bad question (see question()).
        """
        if len(images) != len(questions):
            raise GeoreasonError(f"questions: {len(questions)} questions for {len(images)} images")
        checked = [self.question(q, check_limit) for q in questions]
        pixels, geometries = self.pixel_values(images)
        prompt = self.prompts.batch([list(q.token_ids) for q in checked], tasks=list(tasks) if tasks else None,
                                    for_generation=True)
        return ProcessorOutput(pixels, prompt, geometries, checked)

    @property
    def stop_ids(self) -> tuple[int, int]:
        """Answer generation stops at [SEG] or end of sequence."""
        return self.prompts.seg_id, self.prompts.eos_id

    # -- outputs -----------------------------------------------------------------------------------
    def decode_answer(self, token_ids: Sequence[int]) -> str:
        """Generated ids -> answer text: up to [SEG], special tokens dropped, cleaned (clean_answer)."""
        return clean_answer(self.prompts.decode_answer(list(token_ids)))

    def restore(self, logits: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Mask logits float [S,S] -> probability float32 [H,W] at the original size (crop, bilinear resize,
        sigmoid)."""
        from scipy.special import expit

        return expit(restore_to_original(logits, geometry)).astype(np.float32)

    def post_process(self, output: Any, geometries: Sequence[Geometry],
                     valid: Sequence[np.ndarray | None] | None = None, threshold: float = 0.5) -> list[PostProcessed]:
        """model.segment's SegmentOutput -> one PostProcessed per row, at each image's original size.

        `valid` (bool [H,W] per image, None = all valid) zeroes the probability on nodata pixels;
        `threshold` in (0, 1) on the probability gives the mask.
        """
        logits = output.logits.float().cpu().numpy()
        if len(geometries) != logits.shape[0]:
            raise GeoreasonError(f"post_process: {len(geometries)} geometries for {logits.shape[0]} predictions")
        results = []
        for row, geometry in enumerate(geometries):
            probability = self.restore(logits[row], geometry)
            if valid is not None and valid[row] is not None:
                probability[~valid[row]] = 0.0
            answer = None if output.answer_ids is None else self.decode_answer(output.answer_ids[row])
            results.append(PostProcessed(probability, probability > threshold, answer))
        return results


__all__ = ["PostProcessed", "ProcessorOutput", "Question", "SegEarthProcessor", "clean_answer"]
