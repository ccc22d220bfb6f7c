"""The comparison study of the paper's variants at small scale.

A grid of variants (`grid`: CLIP and MAE-CLIP with each pooling, MAE-CLIP's
masking and contrastive view, M3AE, MAE) × seeds × training-set sizes at a
fixed step budget; each run trained by `recipes/pretrain.py` and evaluated
with the suite (`runner`), then a table and plots over seeds (`report`).
`recipes/study.py` is its command line; docs/study.md how to run it.

Imports: this package launches the recipes as processes and reads their
files; it never imports keras, so it sits above training and evaluation.
"""

from keras_maeclip.study.grid import Variant, all_variants, defined_flags, evaluations_for, select_variants
from keras_maeclip.study.report import aggregate, read_csv, report_from_csv, rows_from_results, write_report
from keras_maeclip.study.runner import (
    Run,
    StudyConfig,
    StudyError,
    describe,
    execute,
    finished_result,
    plan,
    run_study,
)
