"""Media work run by the runner: TTS, STT, images, music, video, knowledge-graph lookups.

Each modality sits behind one function of the same shape (backends.py); the runner's job executor
(jobs.py) turns a queued media child run into a call, artifacts of the parent run, and a ledger.
ML stacks are imported inside the backend functions only: importing this package stays cheap.
"""
