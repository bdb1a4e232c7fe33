# attack: an exception message that forges a "plue check" line for another file and hides it with ANSI
# expect: error

def workflow(ctx):
    raise ValueError("x\nother.plue.py: ok" + chr(27) + "[2K" + chr(0x2028))
