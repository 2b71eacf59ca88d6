"""Data and video: the clip store, augmentation, loaders, face tracking, preparation of real videos, generated data."""
