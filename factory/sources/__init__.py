"""Where problems come from: readers per format (and the row rules explode, where), the column mapping onto
the schema (and its Column rules), images, decontamination against the benchmarks, and the synthetic
generators (`synthetic/`, one module per kind).

    from vlfactory.sources import read_source, column_map, map_row, load_image
"""

from vlfactory.sources.columns import Reject, Row, check_columns, column_map, map_row, preflight, read_column
from vlfactory.sources.images import CheckedImage, images_root, load_image
from vlfactory.sources.readers import read_source

__all__ = ["Reject", "Row", "check_columns", "column_map", "map_row", "preflight", "read_column", "CheckedImage",
           "images_root", "load_image", "read_source"]
