"""One APIRouter per resource; ``serving.api.build_app`` puts them together."""
