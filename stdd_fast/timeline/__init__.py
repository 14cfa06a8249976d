"""stdd_fast.timeline: "which action when" in untrimmed video, offline and live.

* :mod:`~stdd_fast.timeline.segments`: window decisions -> segments, online (:class:`Segmenter`,
  :class:`SegmentConfig`, :class:`Segment`): hysteresis, smoothing, minimum duration, merge gap, cooldown;
* :mod:`~stdd_fast.timeline.run`: a file's :class:`Timeline` (``Engine.timeline``) and the live events of
  streams (``Engine.events``), both through the stream windowing and the same segmenter;
* :mod:`~stdd_fast.timeline.outputs`: segments as JSONL / CSV, WebVTT and SRT subtitles, a PNG timeline,
  an annotated MP4.

Events themselves are :class:`stdd_fast.events.Event`; delivering them is :mod:`stdd_fast.delivery`.
"""
