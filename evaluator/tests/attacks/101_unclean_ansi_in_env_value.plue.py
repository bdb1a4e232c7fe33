# attack: a terminal escape in an env value, to clear the screen of whoever reads the plan
# expect: unclean

def workflow(ctx):
    return Plan(name="ci", steps=[Step.bash("a", "true", env={"X": chr(27) + "[2J"})])
