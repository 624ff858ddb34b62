"""The Python API: one function per ``vrnnkit`` command, for notebooks and scripts too.

    import vrnnkit.api as api
    result = api.train(steps=500, out="runs/demo")               # vrnnkit train
    model, path = api.load_model("runs/latest")                  # the --ckpt of every command
    clips = api.sample(model, num=8, steps=20, out="s.gif")      # vrnnkit sample
    futures = api.predict(model, videos, context=5, samples=3)   # on arrays; predict_file on files
    result = api.predict_file(model, "clip.mp4", size=64, grey=True)  # writes clip-predicted.gif
    report = api.evaluate(model, "bouncing-balls")               # vrnnkit eval (an array works too)
    report = api.evaluate(model, "cars.npz", horizon=10, windows=True)  # every window of each episode
    api.export(model, "m.onnx")                                  # vrnnkit export
    array = api.generate_dataset("bouncing-balls", 100, seed=3)  # vrnnkit data bouncing-balls --seed 3
    api.convert_file("clip.mp4", "clip.npy", size=64, grey=True)  # vrnnkit data convert clip.mp4 --size 64 --grey
    api.write_pushed_ball("pushed.npz", 2000, steps=20)           # vrnnkit data pushed-ball (frames with actions)
"""

from vrnnkit.api._actions import record_gym, write_pushed_ball
from vrnnkit.api._datasets import convert_file, generate_dataset, write_dataset
from vrnnkit.api._evaluation import evaluate
from vrnnkit.api._inference import (
    DEFAULT_SAMPLES,
    Prediction,
    default_prediction_path,
    load_model,
    predict,
    predict_file,
    read_input,
    sample,
)
from vrnnkit.api._music import checkpoint_note_range
from vrnnkit.api._train import train
from vrnnkit.api._world import action_windows
from vrnnkit.io.export import export

__all__ = [
    "DEFAULT_SAMPLES",
    "Prediction",
    "action_windows",
    "checkpoint_note_range",
    "convert_file",
    "default_prediction_path",
    "evaluate",
    "export",
    "generate_dataset",
    "load_model",
    "predict",
    "predict_file",
    "read_input",
    "record_gym",
    "sample",
    "train",
    "write_dataset",
    "write_pushed_ball",
]
