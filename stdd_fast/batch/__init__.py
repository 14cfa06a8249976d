"""Corpus jobs on Ray Data: classify a whole video library into a Parquet table, from a laptop to a cluster.

:func:`classify_corpus` runs the job (resume, exactly one row per video, a summary);
:func:`corpus_dataset` returns the Ray ``Dataset`` of result rows for pipelines of your own;
:class:`BatchConfig` says what is computed and with which resources. Ray and pyarrow are imported
when a job starts (the ``ray`` extra: ``pip install -e '.[ray]'`` in the checkout), never by ``import stdd_fast``.
"""

from stdd_fast.batch.config import BatchConfig
from stdd_fast.batch.job import CorpusSummary, classify_corpus, corpus_dataset
from stdd_fast.batch.rows import result_schema

__all__ = ["BatchConfig", "CorpusSummary", "classify_corpus", "corpus_dataset", "result_schema"]
