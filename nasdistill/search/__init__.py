"""ProxylessNAS student search over a search space's supernet (one cost target, or several sharing
one supernet)."""
from .config import SearchConfig, SearchSection, target_folder
from .runner import run_search
from .targets import SearchModel
from .task import ArgmaxPath, SearchTask

__all__ = ["ArgmaxPath", "SearchConfig", "SearchModel", "SearchSection", "SearchTask", "run_search",
           "target_folder"]
