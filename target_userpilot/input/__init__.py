"""Singer input: the lines a tap sends, and the files its BATCH messages name.

- ``reader.py``: every line checked once, read when there is input; errors name the line
- ``manifest.py``: the records of a BATCH message's files (JSONL, gzip, Parquet), one at a time
- ``nesting.py``: JSON nested deeper than the target reads, told apart without recursion
"""

from __future__ import annotations
