"""SOAP adapter: `type: soap` systems driven by a WSDL (see `SoapSystemConfig` and README.md)."""

from adapters.soap.adapter import SoapAdapter
from adapters.soap.config import SoapSystemConfig

__all__ = ["SoapAdapter", "SoapSystemConfig"]
