# attack: an exception message with a lone surrogate, which used to be an internal error and retire the worker
# expect: error

def workflow(ctx):
    raise ValueError("bad " + chr(0xD800))
