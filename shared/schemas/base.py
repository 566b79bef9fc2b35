from pydantic import BaseModel, ConfigDict


class InputModel(BaseModel):
    """Base of every request body: unknown fields are rejected so contract drift fails loudly."""

    model_config = ConfigDict(extra="forbid")


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
