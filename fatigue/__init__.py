"""Support code for the scripts at the top level (train.py, evaluate.py, detect.py, ...).

    fatigue.checkpoints   checkpoint files: the schema, writing and reading, the run's log
    fatigue.training      the training loop, its state, stops and several processes
    fatigue.data          clip storage, augmentation, loaders, video, preparation, generators
    fatigue.inference     using a trained model: metrics, reports, the alarm, detection
"""

import os

from fatigue.errors import install_start_up_handlers

# FFmpeg's own messages ("moov atom not found", "error while decoding MB ...") are not for
# our users: each such case is said in one line of ours (a file that cannot be read, frames
# replaced). OpenCV reads this when it loads, so it is set before any module imports cv2; a
# value the user set (to see them) is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

# Every script imports this package before torch: Ctrl+C or SIGUSR1 while torch loads must
# already be handled (one line; a stack dump) rather than end the process with a traceback.
install_start_up_handlers()
