# attack: a list doubled in a loop until the address space is exhausted
# expect: memory

def workflow(ctx):
    cells = ["plue"]
    while True:
        cells = cells + cells
