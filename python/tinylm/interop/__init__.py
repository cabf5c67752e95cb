"""The ways in and out of tinylm: Hugging Face directories (:mod:`tinylm.interop.hf`),
llama2.c's ``model.bin`` and ``tokenizer.bin`` (:mod:`tinylm.interop.llama2c`) and ONNX
graphs (:mod:`tinylm.interop.onnx_graph`).

Each module holds one format's knowledge (names, layouts, conventions) and converts between
it and tinylm's parameters (:meth:`tinylm.Transformer.state_dict`). Malformed files are
``FormatError``s naming the file and the field; a tinylm config a format cannot hold is a
``ConfigError`` naming the field.
"""
