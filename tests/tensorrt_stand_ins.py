"""What a TensorRT execution context records before an enqueue, for the stand-ins of the
engine in the CPU fake test and the GPU pycuda test (each adds its execute_async_v3)."""

from __future__ import annotations


class RecordingContext:
    """set_input_shape / set_tensor_address as TensorRT's execution context takes them."""

    def __init__(self) -> None:
        self.addr: dict[str, int] = {}
        self.shape: tuple[int, ...] = ()

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = ptr
        return True
