"""Environment repair, installed into a venv by tools/bootstrap.sh only when needed.

A CUDA build of torchvision beside a CPU build of torch cannot load its compiled
ops, and ``import torchvision`` then fails with "operator torchvision::nms does
not exist" while registering fake kernels. Defining the two op schemas before
torchvision loads lets the Python package import (the compiled ops stay
unavailable; rllm_zoo and timm do not use them). The hook is lazy: it does
nothing until something imports torchvision. This file is never part of rllm_zoo.
"""

import sys


class _TorchvisionSchemaRepair:
    _done = False

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and not self._done:
            type(self)._done = True
            try:
                import torch

                lib = torch.library.Library("torchvision", "FRAGMENT")
                lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
                sys.modules[__name__ + "._lib"] = lib  # keep the fragment alive
            except Exception:
                pass
        return None


if not any(isinstance(f, _TorchvisionSchemaRepair) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionSchemaRepair())
