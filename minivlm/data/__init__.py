"""The Shapes world (scenes, images, text) and its word-level tokenizer."""

from .shapes import (
    BACKGROUND, COLORS, NUMBER_WORDS, PLURALS, POSITIONS, QUESTION_KINDS, SHAPES, SIZES, SPLITS,
    QA, SceneBatch, ShapesDataset, ShapesGenerator, WorldConfig,
    caption, classification_labels, collate_examples, concat_scenes, position_word, questions, scenes_from_objects,
    render, sample_qa, sample_scenes, scene_hash, scene_split, world_vocabulary,
)
from .tokenizer import SPECIAL_TOKENS, Tokenizer
