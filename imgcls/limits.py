"""The bounds that keep a hostile or damaged input from making imgcls allocate without limit (docs/security.md).

Values read from a file decide no allocation beyond these; the image pixel limit lives with the header parsers
(``imgcls.data.image_header.DEFAULT_MAX_PIXELS``, ``--max_image_pixels``).
"""

from __future__ import annotations

# A class count read from a file (the largest label of a list file, a Paddle checkpoint's classifier) above this is an
# error naming where it came from; ``--class_dim`` (or ``num_classes``) given explicitly allows more. ImageNet-21k's
# 21,841 classes fit; a 2048-feature classifier of this many classes is 800 MB.
MAX_INFERRED_CLASSES = 100_000

# The largest input side (--image_shape, --crop_size): the readers' limit. A batch of 32 at this size is 26 GB.
MAX_INPUT_SIZE = 8192

# A Paddle tensor file: the bytes before the data (LoD offsets, the TensorDesc) at most this; a longer header is
# not a parameter file (parameters have no LoD).
MAX_TENSOR_HEADER = 1 << 20
# A weights tar: any single header structure (a long name, a pax record) and any one read at most this many bytes.
MAX_TAR_READ = 16 << 20
# A weights tar: at most this many members (the largest model has ~1,000 tensors).
MAX_TAR_MEMBERS = 100_000
# A compressed weights tar decompresses to at most this many bytes per value of the model's tensors (a float64
# tensor, or a float32 one with its optimizer moments, is 8 to 12), plus ``COMPRESSED_SLACK``.
COMPRESSED_BYTES_PER_VALUE = 16
COMPRESSED_SLACK = 16 << 20
