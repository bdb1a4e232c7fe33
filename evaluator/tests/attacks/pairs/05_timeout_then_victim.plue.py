# attack: time out, hoping the next evaluation inherits a half-finished state
def workflow(ctx):
    while True:
        pass
