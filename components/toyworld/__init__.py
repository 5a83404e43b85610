"""A small closed world where concept learning is measurable on a CPU (issue: toy world).

domain.py renders captioned images of simple objects deterministically from a seed; the tiny
pretrained base model and the domain CLIP are trained on it (work in progress).
"""
