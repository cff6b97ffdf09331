"""Word language models: ARPA files (the pocketsphinx English model, IRSTLM builds) and CTC beam
search with them (flashlight-text). Never imported by ``echoasr.model``."""
