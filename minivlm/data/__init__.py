"""The Shapes world (scenes, images, text, datasets) and its word-level tokenizer."""

from .world import (
    BACKGROUND, COLORS, NUMBER_WORDS, PLURALS, POSITIONS, SHAPES, SIZES, SPLITS, SceneBatch, WorldConfig,
    classification_labels, concat_scenes, position_word, sample_scenes, scene_hash, scene_split, scenes_from_objects,
)
from .render import render
from .text import QA, QUESTION_KINDS, caption, questions, sample_qa, sample_vqa, world_vocabulary
from .datasets import ShapesDataset, ShapesGenerator, collate_examples, image_row_batches
from .tokenizer import SPECIAL_TOKENS, Tokenizer
from .documents import (
    END_OF_CHUNK, EPISODE_QUESTION, RULES, Document, Episode, encode_interleaved, few_shot_episodes,
    interleaved_documents,
)
from .canvas import (
    CANVAS_SIZES, CanvasConfig, canvas_configs, canvas_scene_hash, canvas_scene_split, render_canvas,
    sample_canvas_scenes,
)
from .canvas_text import CANVAS_QUESTION_KINDS, canvas_questions, canvas_sample_qa, sample_canvas_vqa
from .video import (
    DIRECTIONS, VideoBatch, VideoConfig, concat_videos, render_video, sample_videos, video_frame, video_hash,
    video_objects, video_split,
)
from .video_text import VIDEO_QUESTION_KINDS, frame_word, sample_video_vqa, video_questions, video_sample_qa
