from kvant.quantize.hub.card import build_card, card_data, card_text
from kvant.quantize.hub.push import PushResult, push

__all__ = ["PushResult", "build_card", "card_data", "card_text", "push"]
