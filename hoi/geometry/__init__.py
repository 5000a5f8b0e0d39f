"""Geometry in plain torch: cameras, the hand skeleton, the motion layout, point-set distances."""
