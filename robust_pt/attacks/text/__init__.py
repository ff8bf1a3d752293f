"""Text-space threat models: TextAttack recipes (recipes.py), natural text corruptions
(corruptions.py), and TextAttack's offline import (setup.py)."""
