// PixelMed's DicomSRValidator (IOD and template checks) on several SRs in one JVM (its
// main() takes one file, and compiling its rules costs seconds per start). Run as a
// single-file program:
//   java -cp pixelmed.jar:commons-codec.jar ValidateSR.java FILE...
// Prints "=== FILE" before each file's report.
import com.pixelmed.dicom.AttributeList;
import com.pixelmed.validate.DicomSRValidator;

public class ValidateSR {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String path : args) {
            AttributeList list = new AttributeList();
            list.read(path);
            System.out.println("=== " + path);
            System.out.println(validator.validate(list));
        }
    }
}
