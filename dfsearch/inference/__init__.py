"""Using a trained detector without Ray: load it (:mod:`.detector`), score videos (:mod:`.scoring`), draw its
attention (:mod:`.attention`).  ``python -m dfsearch.predict`` is the command line over this package."""

from dfsearch.inference.detector import Detector, load_detector
from dfsearch.inference.scoring import VideoScore, face_views, predict, score_video, score_views

__all__ = ["Detector", "VideoScore", "face_views", "load_detector", "predict", "score_video", "score_views"]
