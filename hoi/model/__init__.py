"""Networks: the synchronized video-motion DiT (SViMo), VID, attention, encoders, weights."""
