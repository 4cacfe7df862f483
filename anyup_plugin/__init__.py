"""AnyUp feature upsampling for dense prediction."""
__version__ = '0.1.0'
