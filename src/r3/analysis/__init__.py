"""Error analysis, cognitive-behaviour measurement and the experiment report."""
