"""ProxylessNAS student search over a search space's supernet."""
from .config import SearchConfig, SearchSection
from .runner import run_search
from .task import ArgmaxPath, SearchTask

__all__ = ["ArgmaxPath", "SearchConfig", "SearchSection", "SearchTask", "run_search"]
