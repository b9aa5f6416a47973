"""The external contract as code: Redis wire schemas and the WorkerPool resource.

See DESIGN.md §1 and §3. Nothing here does I/O.
"""
