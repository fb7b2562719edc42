from kvant.quantize.hub.push import PushResult, push

__all__ = ["PushResult", "push"]
