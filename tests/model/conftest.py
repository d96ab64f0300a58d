import sys
from pathlib import Path

# Lets tests import the small shared fixtures module beside them (shapes_fixture).
sys.path.insert(0, str(Path(__file__).parent))
