"""DVC stage `detect_proposals`: see pipeline.runner.STAGES for the function it runs."""

from pipeline.runner import main

if __name__ == "__main__":
    main("detect_proposals")
