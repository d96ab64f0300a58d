from .boxes import Boxes
from .masks import Masks
__all__=["Boxes","Masks"]
