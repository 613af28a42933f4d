"""Builds CARE's training mix (ChartQA + Geometry3K + ViRL39K, deduplicated) as verl parquet shards.

Run ``python data_prep/build_mix.py --help``. Modules, one concept each:

- :mod:`data_prep.schema`: the output Arrow schema, data-source names and drop reasons.
- :mod:`data_prep.prompts`: the CARE instruction, ``<image>`` placeholders, ground truths, choices.
- :mod:`data_prep.sources`: opening local copies or hub ids, column checks, raw row batches.
- :mod:`data_prep.rows`: per-source column mapping (raw row -> :class:`~data_prep.rows.Record`).
- :mod:`data_prep.images`: decoding, the pixel budget, perceptual hashes, token estimates.
- :mod:`data_prep.process`: the per-row work the process pool runs.
- :mod:`data_prep.dedup`: normalised question text + perceptual hash index.
- :mod:`data_prep.writer`: streaming shard writer and the validation hold-out.
- :mod:`data_prep.report`: counts, reconciliation (read = kept + dropped), ``report.json`` and table.

No verl import here (tests use verl's ``RLHFDataset`` to check the output).
"""

from data_prep.prompts import CARE_INSTRUCTION
from data_prep.schema import DATA_SOURCES, OUTPUT_SCHEMA

__all__ = ["CARE_INSTRUCTION", "DATA_SOURCES", "OUTPUT_SCHEMA"]
