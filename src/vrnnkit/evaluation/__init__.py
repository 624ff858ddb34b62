"""Evaluation: likelihood bounds of fixed-length (``bounds``) and variable-length
(``sequences``) data, and the video metrics (``metrics``).

    from vrnnkit.evaluation import evaluate, psnr, ssim, prediction_metrics
"""

from vrnnkit.evaluation.bounds import evaluate
from vrnnkit.evaluation.metrics import MSE_FLOOR, PSNR_MAX, prediction_metrics, psnr, ssim
from vrnnkit.evaluation.sequences import evaluate_variable_length

__all__ = ["MSE_FLOOR", "PSNR_MAX", "evaluate", "evaluate_variable_length", "prediction_metrics", "psnr", "ssim"]
