import CXen
