"""The course machinery, not a VLM concept: the checks that grade the exercise notebooks
(`grading`), the generator of exercises/ from solutions/ (`exercises`), and later the scoring."""
