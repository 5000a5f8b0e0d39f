"""SViMo: synchronized video + 3D-motion diffusion for hand-object interaction."""
